"""Fixtures of the service tests; shared helpers live in service_fixtures.py (imported as
``tests.service.service_fixtures``)."""
