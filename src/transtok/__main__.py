from transtok.cli import main

raise SystemExit(main())
