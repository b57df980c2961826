"""``python -m infra.local.fake_model``: run the fake model server in the foreground."""

from infra.local.fake_model.server import main

raise SystemExit(main())
