"""`python -m siprec_node` is the same as the `siprec-node` console script."""

from siprec_node.cli import main

raise SystemExit(main())
