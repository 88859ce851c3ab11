"""Django's ORM through chorus, as a Django application uses it: `migrate`
of Django's own apps (auth, contenttypes, sessions) and of this test's
(chorus_orm/, whose tables run_syncdb creates): DDL, foreign keys, indexes,
and the rows the post-migrate signals insert; then the ORM's writes:
create, bulk_create, update with F() and Now(), get_or_create /
update_or_create, nested atomic() blocks (savepoints) with an
IntegrityError rolled back to the savepoint, select_for_update, cascading
deletes, many-to-many, sessions and password hashing; and a column added
by the schema editor under a live table. Django's own connection setup
(MySQL: READ COMMITTED and sql_mode; PostgreSQL: time zone) is part of
what is tested.

Usage: django_orm.py mysql|postgresql CHORUS_URL. Run by
integration-tests/tests/python_orms.rs, which then compares every node.
Exits non-zero on any surprise."""

import datetime
import sys
import uuid
from decimal import Decimal
from urllib.parse import unquote, urlparse

engine, url = sys.argv[1], sys.argv[2]
if engine == "mysql":
    import pymysql

    pymysql.install_as_MySQLdb()

import django
from django.conf import settings

u = urlparse(url)
database = {
    "ENGINE": f"django.db.backends.{engine}",
    "NAME": unquote(u.path.lstrip("/")),
    "USER": unquote(u.username),
    "PASSWORD": unquote(u.password or ""),
    "HOST": u.hostname,
    "PORT": str(u.port),
    "TEST": {"NAME": None},
}
if engine == "mysql":
    database["OPTIONS"] = {"charset": "utf8mb4"}
settings.configure(
    DATABASES={"default": database},
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django.contrib.sessions",
        "chorus_orm",
    ],
    USE_TZ=True,
    TIME_ZONE="UTC",
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    SECRET_KEY="chorus-test",
)
django.setup()

from django.contrib.auth.models import Group, Permission, User  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import IntegrityError, connection, models, transaction  # noqa: E402
from django.db.models import Count, F, Q, Sum  # noqa: E402
from django.db.models.functions import Now, Upper  # noqa: E402


def check(ok, what):
    if not ok:
        raise SystemExit(f"check failed: {what}")


# chorus_orm has no migrations: run_syncdb creates its tables from the models.
call_command("migrate", verbosity=0, interactive=False, run_syncdb=True)
check(Permission.objects.count() > 0, "migrate's post-migrate signal created the permissions")


from chorus_orm.models import Author, Book, Tag  # noqa: E402

# Plain creates: each an INSERT (RETURNING on PostgreSQL, LAST_INSERT_ID on MySQL).
authors = [Author.objects.create(name=f"author {i}") for i in range(5)]
check(len({a.pk for a in authors}) == 5, "distinct ids")
check(Author.objects.get(name="author 3").pk == authors[3].pk, "reads see the session's own writes")
tags = Tag.objects.bulk_create([Tag(label=f"tag {i}") for i in range(4)])
Book.objects.bulk_create(
    [
        Book(
            author=authors[i % 5],
            title=f"book {i}",
            price=Decimal("9.99") + i,
            stock=i,
            published=datetime.date(2020, 1, 1) + datetime.timedelta(days=i),
            data={"i": i, "quote": "it's \"quoted\" \\ back", "list": [1, 2, 3]},
        )
        for i in range(30)
    ]
)
check(Book.objects.count() == 30, "bulk_create wrote 30 books")

# Updates computed on the server: F() expressions and the database's clock.
n = Book.objects.filter(stock__lt=10).update(stock=F("stock") + 100, touched=Now())
check(n == 10, f"update with F() matched 10 rows, not {n}")
Book.objects.filter(title__startswith="book 2").update(title=Upper("title"))
Book.objects.filter(Q(price__gt=30) | Q(stock=0)).update(price=F("price") * Decimal("1.10"))

# Nested atomic blocks: the inner one fails on the unique name and is rolled
# back to its savepoint; the outer one commits the rest.
with transaction.atomic():
    a = Author.objects.create(name="outer")
    try:
        with transaction.atomic():
            Author.objects.create(name="inner ok")
            Author.objects.create(name="author 1")  # duplicate
    except IntegrityError:
        pass
    else:
        raise SystemExit("check failed: the duplicate name was accepted")
    Book.objects.create(author=a, title="outer's book", price=Decimal("1.00"))
check(Author.objects.filter(name="outer").exists(), "the outer block committed")
check(not Author.objects.filter(name="inner ok").exists(), "the inner block was rolled back")

# A rolled-back transaction leaves nothing anywhere.
try:
    with transaction.atomic():
        Author.objects.create(name="rolled back")
        raise RuntimeError("roll back")
except RuntimeError:
    pass
check(not Author.objects.filter(name="rolled back").exists(), "the rollback undid the insert")

# Row locks, read-modify-write.
with transaction.atomic():
    b = Book.objects.select_for_update().get(title="book 5")
    b.stock -= 1
    b.data["sold"] = True
    b.save()

# get_or_create / update_or_create (a SELECT, then an INSERT or UPDATE).
t, created = Tag.objects.get_or_create(label="tag 1")
check(not created, "tag 1 existed")
t, created = Tag.objects.get_or_create(label="fresh")
check(created, "fresh was created")
Book.objects.update_or_create(title="book 7", defaults={"stock": 77})
Book.objects.update_or_create(title="new book", defaults={"author": authors[0], "price": Decimal("5.50")})

# Many-to-many: the through table.
for i, b in enumerate(Book.objects.order_by("id")[:12]):
    b.tags.add(tags[i % 4], t)
tags[0].books.remove(*tags[0].books.order_by("id")[:2])
check(Tag.objects.annotate(n=Count("books")).get(label="fresh").n == 12, "m2m rows")

# Cascading delete: Django deletes the books (and their tag rows) first.
authors[4].delete()
check(not Book.objects.filter(author_id=authors[4].pk).exists(), "the cascade deleted the books")
Book.objects.filter(stock__gte=100, price__lt=15).delete()

# Django's own apps: users with hashed passwords, groups, permissions, sessions.
user = User.objects.create_user("reader", "reader@example.com", "secret pw")
group = Group.objects.create(name="readers")
group.permissions.add(*Permission.objects.filter(codename__startswith="view_"))
user.groups.add(group)
user.last_login = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
user.save(update_fields=["last_login"])
check(User.objects.get(username="reader").check_password("secret pw"), "password hash round trip")
s = SessionStore()
s["cart"] = [1, 2, 3]
s.create()
check(SessionStore(session_key=s.session_key).load()["cart"] == [1, 2, 3], "session stored")

# The schema changes under a live table: a new column with a default (Django
# adds it with the default, then drops the default), an index, a rename.
field = models.IntegerField(default=3)
field.set_attributes_from_name("rating")
with connection.schema_editor() as editor:
    editor.add_field(Book, field)
Book.add_to_class("rating", field)
Book.objects.filter(stock=77).update(rating=5)
check(Book.objects.filter(rating=3).count() > 0, "existing rows got the default")

total = Book.objects.aggregate(s=Sum("stock"))["s"]
check(total is not None and total > 0, "aggregate")
print(f"django {django.get_version()} on {engine}: ok ({Book.objects.count()} books, stock {total})")
