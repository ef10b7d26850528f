from facewire.cli import main

raise SystemExit(main())
