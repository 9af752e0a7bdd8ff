"""What the tests import: paths, the tiny configs, test doubles, servers and request helpers.
Fixtures stay in the conftest files; a test module never imports a conftest or another test."""
