//! Pure comparison for `verify`: per-node snapshots of table summaries in, the
//! differences out. No I/O, so every case is a table-driven unit test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// `schema.table`, ordered for stable output. MySQL has no schemas inside a
/// database (its "schema" is the database itself), so its tables have an
/// empty `schema` and print as just `table` (`db.table` in a [`Difference`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    pub fn new(schema: &str, table: &str) -> TableName {
        TableName { schema: schema.to_string(), table: table.to_string() }
    }

    /// A table of a database without schemas (MySQL).
    pub fn unqualified(table: &str) -> TableName {
        TableName { schema: String::new(), table: table.to_string() }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // PostgreSQL schema names are never empty, so this cannot hide one.
        if self.schema.is_empty() { f.write_str(&self.table) } else { write!(f, "{}.{}", self.schema, self.table) }
    }
}

/// One column as the catalog defines it, in attribute order. Compared as a
/// whole: a different name, type (`format_type`, so typmods count) or
/// nullability is a schema difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_name: String,
    pub not_null: bool,
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}{}", self.name, self.type_name, if self.not_null { " not null" } else { "" })
    }
}

/// What a relation holds, compared for equality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A table: the row count and a digest of the multiset of its rows' text,
    /// independent of physical row order (see `collect::checksum_sql`).
    Rows { rows: i64, digest: String },
    /// A sequence: its state (`log_cnt` is left out: it differs between
    /// servers with the same state).
    Sequence { last_value: i64, is_called: bool },
}

impl Content {
    pub fn rows(rows: i64, digest: &str) -> Content {
        Content::Rows { rows, digest: digest.to_string() }
    }
}

impl fmt::Display for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // 16 hex digits are plenty to tell digests apart by eye.
            Content::Rows { rows, digest } => write!(f, "{rows}/{}", &digest[..digest.len().min(16)]),
            Content::Sequence { last_value, is_called: true } => write!(f, "{last_value}"),
            Content::Sequence { last_value, is_called: false } => write!(f, "{last_value}:not-called"),
        }
    }
}

/// What `verify` knows about one table (or sequence) on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    pub columns: Vec<Column>,
    pub content: Content,
}

/// Everything collected from one node: database -> table -> summary. Only the
/// databases verify looked at are present; a database the node lacks is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSnapshot {
    pub node: String,
    pub databases: BTreeMap<String, BTreeMap<TableName, TableSummary>>,
}

/// One way in which a database or table differs between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    /// Present on the leader, absent on these followers.
    MissingOn(Vec<String>),
    /// Present on these followers, absent on the leader.
    NotOnLeader(Vec<String>),
    /// Column definitions per node (every node that has the table).
    Columns(Vec<(String, Vec<Column>)>),
    /// Content per node (every node that has the table).
    Content(Vec<(String, Content)>),
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detail::MissingOn(nodes) => write!(f, "missing on {}", nodes.join(", ")),
            Detail::NotOnLeader(nodes) => write!(f, "not on the leader but on {}", nodes.join(", ")),
            Detail::Columns(per_node) => {
                f.write_str("columns differ:")?;
                for (node, cols) in per_node {
                    let cols: Vec<String> = cols.iter().map(Column::to_string).collect();
                    write!(f, " {node}=({})", cols.join(", "))?;
                }
                Ok(())
            }
            Detail::Content(per_node) => {
                let mut first = true;
                for (node, content) in per_node {
                    if !first {
                        f.write_str(" ")?;
                    }
                    first = false;
                    write!(f, "{node}={content}")?;
                }
                Ok(())
            }
        }
    }
}

/// A database (`table: None`) or table that is not the same on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub database: String,
    pub table: Option<TableName>,
    pub details: Vec<Detail>,
}

impl Difference {
    /// `db` or `db.schema.table`, as printed.
    pub fn object(&self) -> String {
        match &self.table {
            Some(t) => format!("{}.{t}", self.database),
            None => self.database.clone(),
        }
    }
}

impl fmt::Display for Difference {
    /// One line: `db.schema.table: leader=3/ab.. follower1=4/cd..` or `db: missing on follower2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.object())?;
        for (i, d) in self.details.iter().enumerate() {
            write!(f, "{}{d}", if i == 0 { " " } else { "; " })?;
        }
        Ok(())
    }
}

/// The verdict: what differs, and how much was compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub nodes: Vec<String>,
    /// Databases compared (those on the leader, plus any only on followers).
    pub databases: usize,
    /// Tables compared (the union over all nodes).
    pub tables: usize,
    pub differences: Vec<Difference>,
}

impl Report {
    /// True when every node holds exactly the leader's data.
    pub fn converged(&self) -> bool {
        self.differences.is_empty()
    }

    /// The differences that concern database `db`.
    pub fn differences_in<'a>(&'a self, db: &'a str) -> impl Iterator<Item = &'a Difference> + 'a {
        self.differences.iter().filter(move |d| d.database == db)
    }

    /// The closing line of `chorus verify`.
    pub fn summary(&self) -> String {
        let scope = format!(
            "{} database{}, {} table{}, {} node{}",
            self.databases,
            plural(self.databases),
            self.tables,
            plural(self.tables),
            self.nodes.len(),
            plural(self.nodes.len())
        );
        if self.converged() {
            format!("all nodes match ({scope})")
        } else {
            let n = self.differences.len();
            format!("{n} difference{} ({scope})", plural(n))
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Compare snapshots; `snapshots[0]` is the leader, the reference every
/// follower must equal. Differences come sorted by database, then table.
pub fn compare(snapshots: &[NodeSnapshot]) -> Report {
    let mut report = Report { nodes: snapshots.iter().map(|s| s.node.clone()).collect(), ..Report::default() };
    let Some((leader, followers)) = snapshots.split_first() else { return report };
    let all_dbs: BTreeSet<&String> = snapshots.iter().flat_map(|s| s.databases.keys()).collect();
    report.databases = all_dbs.len();
    for db in all_dbs {
        let Some(leader_tables) = leader.databases.get(db) else {
            let on: Vec<String> =
                followers.iter().filter(|f| f.databases.contains_key(db)).map(|f| f.node.clone()).collect();
            report.differences.push(Difference {
                database: db.clone(),
                table: None,
                details: vec![Detail::NotOnLeader(on)],
            });
            continue;
        };
        let missing: Vec<String> =
            followers.iter().filter(|f| !f.databases.contains_key(db)).map(|f| f.node.clone()).collect();
        if !missing.is_empty() {
            report.differences.push(Difference {
                database: db.clone(),
                table: None,
                details: vec![Detail::MissingOn(missing)],
            });
        }
        // Nodes that have this database, leader first.
        let present: Vec<(&str, &BTreeMap<TableName, TableSummary>)> =
            snapshots.iter().filter_map(|s| s.databases.get(db).map(|t| (s.node.as_str(), t))).collect();
        let all_tables: BTreeSet<&TableName> = present.iter().flat_map(|(_, t)| t.keys()).collect();
        report.tables += all_tables.len();
        for table in all_tables {
            let details = compare_table(table, leader_tables.contains_key(table), &present);
            if !details.is_empty() {
                report.differences.push(Difference { database: db.clone(), table: Some(table.clone()), details });
            }
        }
    }
    report
}

/// How one table differs among the nodes that have its database (`present[0]`
/// is the leader when it has the database, which `compare` guarantees).
fn compare_table(
    table: &TableName,
    on_leader: bool,
    present: &[(&str, &BTreeMap<TableName, TableSummary>)],
) -> Vec<Detail> {
    let mut details = Vec::new();
    let (with, without): (Vec<_>, Vec<_>) = present.iter().partition(|(_, tables)| tables.contains_key(table));
    let names = |v: &[&(&str, _)]| v.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
    if on_leader {
        if !without.is_empty() {
            details.push(Detail::MissingOn(names(&without)));
        }
    } else {
        details.push(Detail::NotOnLeader(names(&with)));
        return details;
    }
    let summaries: Vec<(&str, &TableSummary)> = with.iter().map(|(n, t)| (*n, &t[table])).collect();
    let reference = summaries[0].1;
    if summaries.iter().any(|(_, s)| s.columns != reference.columns) {
        details.push(Detail::Columns(summaries.iter().map(|(n, s)| (n.to_string(), s.columns.clone())).collect()));
    }
    if summaries.iter().any(|(_, s)| s.content != reference.content) {
        details.push(Detail::Content(summaries.iter().map(|(n, s)| (n.to_string(), s.content.clone())).collect()));
    }
    details
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str) -> Column {
        Column { name: name.into(), type_name: ty.into(), not_null: false }
    }

    fn summary(rows: i64, digest: &str, cols: &[(&str, &str)]) -> TableSummary {
        TableSummary { columns: cols.iter().map(|(n, t)| col(n, t)).collect(), content: Content::rows(rows, digest) }
    }

    /// A node from `(db, [(schema.table, summary)])`.
    fn node(name: &str, dbs: &[(&str, &[(&str, TableSummary)])]) -> NodeSnapshot {
        NodeSnapshot {
            node: name.into(),
            databases: dbs
                .iter()
                .map(|(db, tables)| {
                    let tables = tables
                        .iter()
                        .map(|(qualified, s)| {
                            let (schema, table) = qualified.split_once('.').unwrap();
                            (TableName::new(schema, table), s.clone())
                        })
                        .collect();
                    (db.to_string(), tables)
                })
                .collect(),
        }
    }

    fn lines(report: &Report) -> Vec<String> {
        report.differences.iter().map(Difference::to_string).collect()
    }

    const INT: &[(&str, &str)] = &[("id", "integer"), ("v", "text")];

    #[test]
    fn cases() {
        let t = || summary(3, "00112233445566778899aabbccddeeff", INT);
        let changed = || summary(3, "ffeeddccbbaa99887766554433221100", INT);
        let more = || summary(4, "0123456789abcdef0123456789abcdef", INT);
        let bigint = || summary(3, "00112233445566778899aabbccddeeff", &[("id", "bigint"), ("v", "text")]);
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Vec<NodeSnapshot>, Vec<&str>)> = vec![
            (
                "identical nodes",
                vec![node("leader", &[("d", &[("public.t", t())])]), node("f1", &[("d", &[("public.t", t())])])],
                vec![],
            ),
            ("leader only", vec![node("leader", &[("d", &[("public.t", t())])])], vec![]),
            (
                "same count, other rows",
                vec![
                    node("leader", &[("d", &[("public.t", t())])]),
                    node("f1", &[("d", &[("public.t", t())])]),
                    node("f2", &[("d", &[("public.t", changed())])]),
                ],
                vec!["d.public.t: leader=3/0011223344556677 f1=3/0011223344556677 f2=3/ffeeddccbbaa9988"],
            ),
            (
                "more rows",
                vec![node("leader", &[("d", &[("public.t", t())])]), node("f1", &[("d", &[("public.t", more())])])],
                vec!["d.public.t: leader=3/0011223344556677 f1=4/0123456789abcdef"],
            ),
            (
                "table missing on a follower",
                vec![
                    node("leader", &[("d", &[("public.t", t()), ("s.u", t())])]),
                    node("f1", &[("d", &[("public.t", t()), ("s.u", t())])]),
                    node("f2", &[("d", &[("public.t", t())])]),
                ],
                vec!["d.s.u: missing on f2"],
            ),
            (
                "missing on one, different on another",
                vec![
                    node("leader", &[("d", &[("public.t", t())])]),
                    node("f1", &[("d", &[])]),
                    node("f2", &[("d", &[("public.t", more())])]),
                ],
                vec!["d.public.t: missing on f1; leader=3/0011223344556677 f2=4/0123456789abcdef"],
            ),
            (
                "table only on a follower",
                vec![node("leader", &[("d", &[])]), node("f1", &[("d", &[("public.extra", t())])])],
                vec!["d.public.extra: not on the leader but on f1"],
            ),
            (
                "database missing on a follower",
                vec![
                    node("leader", &[("d", &[("public.t", t())]), ("e", &[])]),
                    node("f1", &[("d", &[("public.t", t())])]),
                ],
                vec!["e: missing on f1"],
            ),
            (
                "database only on a follower",
                vec![node("leader", &[]), node("f1", &[("x", &[])]), node("f2", &[("x", &[])])],
                vec!["x: not on the leader but on f1, f2"],
            ),
            (
                "column type differs, same text",
                vec![node("leader", &[("d", &[("public.t", t())])]), node("f1", &[("d", &[("public.t", bigint())])])],
                vec!["d.public.t: columns differ: leader=(id integer, v text) f1=(id bigint, v text)"],
            ),
            (
                "column type and content differ",
                vec![
                    node("leader", &[("d", &[("public.t", t())])]),
                    node("f1", &[("d", &[("public.t", summary(3, "ab", &[("id", "bigint"), ("v", "text")]))])]),
                ],
                vec![
                    "d.public.t: columns differ: leader=(id integer, v text) f1=(id bigint, v text); \
                     leader=3/0011223344556677 f1=3/ab",
                ],
            ),
            (
                "sorted by database then table",
                vec![
                    node("leader", &[("b", &[("public.z", t()), ("public.a", t())]), ("a", &[("public.t", t())])]),
                    node("f1", &[("b", &[("public.z", more()), ("public.a", more())]), ("a", &[("public.t", more())])]),
                ],
                vec![
                    "a.public.t: leader=3/0011223344556677 f1=4/0123456789abcdef",
                    "b.public.a: leader=3/0011223344556677 f1=4/0123456789abcdef",
                    "b.public.z: leader=3/0011223344556677 f1=4/0123456789abcdef",
                ],
            ),
        ];
        for (name, snapshots, expected) in cases {
            let report = compare(&snapshots);
            assert_eq!(lines(&report), expected, "case {name:?}");
            assert_eq!(report.converged(), expected.is_empty(), "case {name:?}");
        }
    }

    #[test]
    fn unqualified_tables_print_as_database_dot_table() {
        let t = summary(3, "00112233445566778899aabbccddeeff", INT);
        let mut follower = NodeSnapshot { node: "f1".into(), databases: BTreeMap::new() };
        follower.databases.insert("shop".into(), BTreeMap::from([(TableName::unqualified("extra"), t.clone())]));
        let leader = NodeSnapshot {
            node: "leader".into(),
            databases: BTreeMap::from([("shop".into(), BTreeMap::from([(TableName::unqualified("t"), t)]))]),
        };
        assert_eq!(
            lines(&compare(&[leader, follower])),
            ["shop.extra: not on the leader but on f1", "shop.t: missing on f1"]
        );
    }

    #[test]
    fn sequences_compare_their_state() {
        let seq = |last_value, is_called| TableSummary {
            columns: vec![col("last_value", "bigint")],
            content: Content::Sequence { last_value, is_called },
        };
        let report = compare(&[
            node("leader", &[("d", &[("public.s", seq(5, true)), ("public.u", seq(1, false))])]),
            node("f1", &[("d", &[("public.s", seq(4, true)), ("public.u", seq(1, true))])]),
            node("f2", &[("d", &[("public.s", seq(5, true)), ("public.u", seq(1, false))])]),
        ]);
        assert_eq!(
            lines(&report),
            ["d.public.s: leader=5 f1=4 f2=5", "d.public.u: leader=1:not-called f1=1 f2=1:not-called"]
        );
    }

    #[test]
    fn not_null_is_part_of_the_column_definition() {
        let mut strict = summary(1, "aa", INT);
        strict.columns[0].not_null = true;
        let report = compare(&[
            node("leader", &[("d", &[("public.t", strict)])]),
            node("f1", &[("d", &[("public.t", summary(1, "aa", INT))])]),
        ]);
        assert_eq!(
            lines(&report),
            ["d.public.t: columns differ: leader=(id integer not null, v text) f1=(id integer, v text)"]
        );
    }

    #[test]
    fn summary_counts_what_was_compared() {
        let t = summary(1, "aa", INT);
        let report = compare(&[
            node("leader", &[("d", &[("public.t", t.clone()), ("public.u", t.clone())]), ("e", &[])]),
            node("f1", &[("d", &[("public.t", t.clone()), ("public.u", t.clone())]), ("e", &[])]),
        ]);
        assert_eq!(report.summary(), "all nodes match (2 databases, 2 tables, 2 nodes)");
        let report = compare(&[node("leader", &[("d", &[("public.t", t.clone())])]), node("f1", &[("d", &[])])]);
        assert_eq!(report.summary(), "1 difference (1 database, 1 table, 2 nodes)");
        assert_eq!(report.differences_in("d").count(), 1);
        assert_eq!(report.differences_in("e").count(), 0);
        assert_eq!(compare(&[]).summary(), "all nodes match (0 databases, 0 tables, 0 nodes)");
    }
}
