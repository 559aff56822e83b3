"""The toolkit's data: ``specs/`` and ``golden/``, shipped inside the wheel.

In the repository ``specs/`` and ``golden/`` stay top-level folders; ``cookbook/_data/specs`` and
``cookbook/_data/golden`` are symbolic links to them, which the wheel build turns into real files. Read them
through :mod:`cookbook.data`, never by a path relative to a source file.
"""
