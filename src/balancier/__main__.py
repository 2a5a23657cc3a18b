from balancier.cli import main

raise SystemExit(main())
