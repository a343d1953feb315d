from stilts.cli import main

raise SystemExit(main())
