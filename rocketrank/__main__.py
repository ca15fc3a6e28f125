from rocketrank.cli import main

raise SystemExit(main())
