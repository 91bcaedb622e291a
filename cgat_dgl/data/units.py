"""Units of the properties of the shared data, by physical quantity (the name before the last "_")."""

from __future__ import annotations

QUANTITY_UNITS = {"e_form": "eV/atom", "gap": "eV", "volume": "Å³/atom", "energy_per_atom": "eV/atom"}


def unit_of(prop: str) -> str | None:
    """The unit of a property column, None for a quantity this table does not know."""
    if prop in QUANTITY_UNITS:
        return QUANTITY_UNITS[prop]
    return QUANTITY_UNITS.get(prop.rsplit("_", 1)[0]) if "_" in prop else None


def column_name(prop: str) -> str:
    """A CSV column of predicted values: the property and, where known, its unit."""
    unit = unit_of(prop)
    return f"{prop} [{unit}]" if unit else prop
