"""The IFEval steering suite.

Every option (``pytest --help``, section "pytest-steer") can be set on the command line
or in the ini file; this suite adds nothing of its own beyond its test module.
"""
