"""The ``weightstore`` command line: a thin typer front end over :class:`weightstore.WeightStore`.

``main`` holds the app and its commands, ``app`` the error mapping and store lifetime,
``render`` the tables and JSON, ``progress`` the byte progress bars and ``plot`` the storage
chart (matplotlib is imported only when a plot is asked for).
"""
