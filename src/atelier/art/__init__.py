"""Image -> image. Pure torch and PIL: no database, no web, no settings object.

``engines/`` holds what paints, ``blocks/`` what the engines are built from (nothing in
``blocks`` imports an engine); ``errors`` and ``progress`` are the vocabulary every part shares.
Installing weights and the style catalog's files is :mod:`atelier.install`'s business, above
this package.

Nothing in this package imports from ``atelier.install``, ``atelier.store``,
``atelier.service``, ``atelier.web`` or ``atelier.config``; callers pass paths, devices and
limits as keyword arguments.
"""
