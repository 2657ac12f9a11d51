"""Repository-wide test settings."""

pytest_plugins = ["pytester"]
