from lsr.cli import main

raise SystemExit(main())
