"""Renderers of :class:`pytest_steer.results.RunResults`: terminal, JSON and files."""
