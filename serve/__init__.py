"""serve: infra built on vsyn (vsyn never imports it)."""
