"""SQLAlchemy 2 through chorus, ORM and Core, as an application uses it:
metadata.create_all (tables, foreign keys, indexes, server defaults), the
unit of work's batched INSERTs (SQLAlchemy's "insertmanyvalues": one
multi-row INSERT ... RETURNING on PostgreSQL and MariaDB), relationships
with delete-orphan cascades, begin_nested() savepoints with an
IntegrityError, bulk UPDATE / DELETE by criteria, each dialect's upsert,
server-side defaults and func.now(), Core executemany, and ALTER TABLE
through the connection.

Usage: sqlalchemy_orm.py mysql|postgresql CHORUS_URL. Run by
integration-tests/tests/python_orms.rs, which then compares every node.
Exits non-zero on any surprise."""

import datetime
import sys
import uuid
from decimal import Decimal
from urllib.parse import urlparse

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Uuid,
    create_engine,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

dialect, url = sys.argv[1], sys.argv[2]
u = urlparse(url)
driver = "mysql+pymysql" if dialect == "mysql" else "postgresql+psycopg"
query = "?charset=utf8mb4" if dialect == "mysql" else ""
engine = create_engine(f"{driver}://{u.netloc}{u.path}{query}")


def check(ok, what):
    if not ok:
        raise SystemExit(f"check failed: {what}")


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "sa_customer"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(120), unique=True)
    token: Mapped[uuid.UUID] = mapped_column(Uuid, default=uuid.uuid4)
    created: Mapped[datetime.datetime] = mapped_column(DateTime, server_default=func.now())
    orders: Mapped[list["Order"]] = relationship(back_populates="customer", cascade="all, delete-orphan")


class Order(Base):
    __tablename__ = "sa_order"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("sa_customer.id"), index=True)
    total: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    state: Mapped[str] = mapped_column(String(20), default="new", server_default="new")
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    customer: Mapped[Customer] = relationship(back_populates="orders")
    lines: Mapped[list["Line"]] = relationship(cascade="all, delete-orphan")


class Line(Base):
    __tablename__ = "sa_line"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("sa_order.id"))
    sku: Mapped[str] = mapped_column(String(30))
    qty: Mapped[int] = mapped_column(Integer)


class Counter(Base):
    __tablename__ = "sa_counter"
    name: Mapped[str] = mapped_column(String(30), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)


Base.metadata.create_all(engine)

# The unit of work: customers, orders and lines flushed in batches
# (multi-row INSERT ... RETURNING), ids assigned by the server.
with Session(engine) as s, s.begin():
    for c in range(8):
        customer = Customer(email=f"c{c}@example.com")
        for o in range(4):
            order = Order(total=Decimal("10.25") * (o + 1), meta={"c": c, "o": o, "note": "it's \"x\""})
            order.lines = [Line(sku=f"sku-{c}-{o}-{i}", qty=i + 1) for i in range(3)]
            customer.orders.append(order)
        s.add(customer)
with Session(engine) as s:
    check(s.scalar(select(func.count()).select_from(Line)) == 96, "96 lines")
    ids = s.scalars(select(Order.id).order_by(Order.id)).all()
    check(len(set(ids)) == 32, "distinct order ids")

# Savepoints: the failing nested block is rolled back, the rest commits.
with Session(engine) as s, s.begin():
    s.add(Customer(email="kept@example.com"))
    try:
        with s.begin_nested():
            s.add(Customer(email="c1@example.com"))  # duplicate
            s.flush()
    except IntegrityError:
        pass
    else:
        raise SystemExit("check failed: the duplicate email was accepted")
    s.add(Customer(email="also kept@example.com"))

# A transaction rolled back: nothing of it anywhere.
with Session(engine) as s:
    s.add(Customer(email="gone@example.com"))
    s.flush()
    s.rollback()

# Bulk UPDATE / DELETE by criteria, with server-side expressions.
with Session(engine) as s, s.begin():
    s.execute(update(Order).where(Order.total > 30).values(state="big", total=Order.total * Decimal("0.9")))
    s.execute(delete(Line).where(Line.qty == 3, Line.sku.like("sku-7-%")))
    s.execute(update(Customer).where(Customer.email.like("c2%")).values(created=func.now()))

# Orphans: removing an order from a customer deletes it and its lines.
with Session(engine) as s, s.begin():
    c = s.scalars(select(Customer).where(Customer.email == "c3@example.com")).one()
    c.orders.pop(0)
    c.orders[0].lines[0].qty = 42
with Session(engine) as s, s.begin():
    s.delete(s.scalars(select(Customer).where(Customer.email == "c4@example.com")).one())

# Upserts, each dialect's own.
if dialect == "mysql":
    from sqlalchemy.dialects.mysql import insert as upsert

    def bump(name):
        stmt = upsert(Counter).values(name=name, hits=1)
        return stmt.on_duplicate_key_update(hits=Counter.hits + 1)
else:
    from sqlalchemy.dialects.postgresql import insert as upsert

    def bump(name):
        stmt = upsert(Counter).values(name=name, hits=1)
        return stmt.on_conflict_do_update(index_elements=[Counter.name], set_={"hits": Counter.hits + 1})


with engine.begin() as conn:
    for name in ["a", "b", "a", "c", "a", "b"]:
        conn.execute(bump(name))
with engine.connect() as conn:
    hits = dict(conn.execute(select(Counter.name, Counter.hits)).all())
    check(hits == {"a": 3, "b": 2, "c": 1}, f"upsert counts {hits}")

# Core executemany, and RETURNING through Core.
with engine.begin() as conn:
    conn.execute(insert(Counter), [{"name": f"m{i}", "hits": i} for i in range(50)])
    rows = conn.execute(insert(Line).returning(Line.id), [{"order_id": ids[1], "sku": "x", "qty": 9}] * 3).all()
    check(len(rows) == 3, "executemany with RETURNING")

# Schema change under a live table.
with engine.begin() as conn:
    conn.execute(text("ALTER TABLE sa_counter ADD COLUMN note VARCHAR(20) DEFAULT 'none'"))
    conn.execute(text("UPDATE sa_counter SET note = 'hot' WHERE hits >= 3"))

with engine.connect() as conn:
    n = conn.scalar(select(func.count()).select_from(Order))
print(f"sqlalchemy on {dialect}: ok ({n} orders)")
