"""Django's test runner's database handling through chorus: what `manage.py
test` does before and after the tests. `create` makes the test database
(CREATE DATABASE over a connection to the `postgres` database; when it
exists already, DROP DATABASE and CREATE again, as --noinput does), runs
`migrate` in it and writes through the ORM; `clone` makes the copy the
parallel runner (--parallel) gives each worker (CREATE DATABASE
<test>_1 WITH TEMPLATE <test>) and writes in it; `destroy` drops the copy
and the test database (Django closes its connections first, then sends
DROP DATABASE at once).

Usage: django_test_db.py create|clone|destroy CHORUS_URL TEST_DB_NAME. Run by
integration-tests/tests/python_orms.rs, which compares every node in
between and checks that the database is gone everywhere after `destroy`.
Exits non-zero on any surprise."""

import sys
from urllib.parse import unquote, urlparse

mode, url, test_name = sys.argv[1], sys.argv[2], sys.argv[3]

import django
from django.conf import settings

u = urlparse(url)
settings.configure(
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(u.path.lstrip("/")),
            "USER": unquote(u.username),
            "PASSWORD": unquote(u.password or ""),
            "HOST": u.hostname,
            "PORT": str(u.port),
            "TEST": {"NAME": test_name},
        }
    },
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "chorus_orm"],
    USE_TZ=True,
    TIME_ZONE="UTC",
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    SECRET_KEY="chorus-test",
    MIGRATION_MODULES={"chorus_orm": None},
)
django.setup()

from django.db import connection  # noqa: E402


def check(ok, what):
    if not ok:
        raise SystemExit(f"check failed: {what}")


if mode == "create":
    # What DiscoverRunner.setup_databases does: autoclobber is --noinput.
    old_name = connection.settings_dict["NAME"]
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    check(name == test_name, f"test database {name}")
    check(connection.settings_dict["NAME"] == test_name, "connected to the test database")
    from django.contrib.auth.models import User  # noqa: E402

    from chorus_orm.models import Author, Book  # noqa: E402

    User.objects.create_user("tester", password="secret")
    authors = [Author.objects.create(name=f"author {i}") for i in range(3)]
    for i in range(6):
        Book.objects.create(author=authors[i % 3], title=f"book {i}", price=i, stock=i, published="2024-01-01", data={})
    check(Book.objects.count() == 6, "six books in the test database")
    connection.close()
elif mode == "clone":
    connection.settings_dict["NAME"] = test_name
    connection.creation.clone_test_db(suffix="1", verbosity=0, autoclobber=True, keepdb=False)
    connection.settings_dict.update(connection.creation.get_test_db_clone_settings("1"))
    connection.close()
    from chorus_orm.models import Author, Book  # noqa: E402

    check(Book.objects.count() == 6, "the clone holds the test database's books")
    a = Author.objects.create(name="only in the clone")
    Book.objects.create(author=a, title="clone book", price=1, stock=1, published="2024-01-02", data={"c": 1})
    check(Book.objects.count() == 7, "seven books in the clone")
    connection.close()
elif mode == "destroy":
    old_name = unquote(u.path.lstrip("/"))
    connection.settings_dict["NAME"] = test_name
    connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=False, suffix="1")
    connection.settings_dict["NAME"] = test_name
    connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=False)
else:
    raise SystemExit(f"unknown mode {mode}")
