from dosediff.cli import main

raise SystemExit(main())
