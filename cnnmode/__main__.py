from cnnmode.cli import main

raise SystemExit(main())
