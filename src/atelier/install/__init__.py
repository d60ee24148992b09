"""Installing what the engines need: the model registry (official URLs, sizes, sha256;
download, verify, import; ``require`` that names the fixing command), the one download loop
(``fetch``), and the style catalog's files (``styles``: a folder per style with its
``style.toml`` and painting; parsing, writing, downloading the paintings).

Above :mod:`atelier.art` (a style's recipe is a Gatys recipe; the registry finds the files an
engine loads), below the service. Nothing here paints, and nothing here knows the database, the
web or the settings object.
"""
