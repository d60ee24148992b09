"""Image -> image engines. Pure torch and PIL: no database, no web, no settings object.

Nothing in this package imports from ``atelier.store``, ``atelier.service``, ``atelier.web``
or ``atelier.config``; callers pass paths, devices and limits as keyword arguments.
"""
