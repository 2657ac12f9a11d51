"""Renderers of :class:`pytest_steer.run.results.RunResults`: terminal, JSON and files."""
