from rayflow.cli import main

raise SystemExit(main())
