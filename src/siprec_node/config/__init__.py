"""Typed settings: TOML file, SIPREC_<SECTION>__<KEY> environment overrides, defaults."""
