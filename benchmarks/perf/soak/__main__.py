from benchmarks.perf.soak.cli import main

raise SystemExit(main())
