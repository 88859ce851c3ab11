"""The models django_orm.py writes through chorus (no migrations: migrate's
run_syncdb creates their tables)."""
