"""The web app: JSON API, HTML pages, static files. Uses ``atelier.service``."""
