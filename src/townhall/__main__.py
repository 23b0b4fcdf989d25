from townhall.cli.main import main

raise SystemExit(main())
