//! Diagnosis: one conclusion per monitor, drawn from the latest verdicts of all its routes.
//!
//! A single pair's class shows what happened on one path. Comparing routes shows why: a key
//! refused everywhere is the credential, a geo block on some routes only is the egress
//! country, and a route that fails every monitor alike is the route itself. [`diagnose`] is a
//! pure function over the whole matrix of latest classes, because telling a route problem
//! apart needs the other monitors' verdicts on the same route.

use std::collections::BTreeMap;
use std::fmt;

use crate::classify::Class;

/// The closed set of diagnoses. [`DiagnosisKind::as_str`] is the spelling used in JSON,
/// metric labels and command output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiagnosisKind {
    /// Every route is ok.
    Healthy,
    /// Some routes fail every monitor with one class each, and the others are ok.
    RouteProblem,
    /// Every route gets `auth`: the key or account is refused everywhere.
    CredentialProblem,
    /// Some routes get `geo_block` and the others are ok.
    GeoPartial,
    /// Every route gets `server_error`: the provider is failing.
    ProviderProblem,
    /// No route is ok, with no single cause.
    AllDown,
    /// Any other combination.
    Mixed,
}

impl DiagnosisKind {
    /// Every kind, in the order used for metric series.
    pub const ALL: [DiagnosisKind; 7] = [
        DiagnosisKind::Healthy,
        DiagnosisKind::RouteProblem,
        DiagnosisKind::CredentialProblem,
        DiagnosisKind::GeoPartial,
        DiagnosisKind::ProviderProblem,
        DiagnosisKind::AllDown,
        DiagnosisKind::Mixed,
    ];

    /// Returns the snake_case name used in JSON, labels and output.
    pub fn as_str(self) -> &'static str {
        match self {
            DiagnosisKind::Healthy => "healthy",
            DiagnosisKind::RouteProblem => "route_problem",
            DiagnosisKind::CredentialProblem => "credential_problem",
            DiagnosisKind::GeoPartial => "geo_partial",
            DiagnosisKind::ProviderProblem => "provider_problem",
            DiagnosisKind::AllDown => "all_down",
            DiagnosisKind::Mixed => "mixed",
        }
    }
}

impl fmt::Display for DiagnosisKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The latest class of one (monitor, route) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// The monitor name.
    pub monitor: String,
    /// The route name.
    pub route: String,
    /// The class of the pair's latest verdict.
    pub class: Class,
}

/// One monitor's diagnosis with a sentence for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The monitor name.
    pub monitor: String,
    /// The kind of problem, or healthy.
    pub kind: DiagnosisKind,
    /// One line naming the classes, routes and, for geo blocks, egress countries.
    pub sentence: String,
}

/// Diagnoses every monitor that has at least one verdict.
///
/// `cells` holds the latest class of every pair that has one, in any order; pairs without a
/// verdict yet are left out by the caller. `countries` maps route names to the egress country
/// last seen on them. The result is sorted by monitor name, and within a monitor the routes
/// keep the order in which they appear in `cells`.
pub fn diagnose(cells: &[Cell], countries: &BTreeMap<String, String>) -> Vec<Diagnosis> {
    let mut monitors: BTreeMap<&str, Vec<&Cell>> = BTreeMap::new();
    for cell in cells {
        monitors.entry(&cell.monitor).or_default().push(cell);
    }
    monitors
        .into_iter()
        .map(|(monitor, row)| {
            let (kind, sentence) = diagnose_monitor(&row, cells, countries);
            Diagnosis {
                monitor: monitor.to_owned(),
                kind,
                sentence,
            }
        })
        .collect()
}

/// Picks the first kind that fits, most specific first.
fn diagnose_monitor(
    row: &[&Cell],
    cells: &[Cell],
    countries: &BTreeMap<String, String>,
) -> (DiagnosisKind, String) {
    let all = |class: Class| row.iter().all(|cell| cell.class == class);
    let routes = join_names(row.iter().map(|cell| cell.route.clone()).collect());
    let (ok, failing): (Vec<&Cell>, Vec<&Cell>) =
        row.iter().partition(|cell| cell.class == Class::Ok);

    if failing.is_empty() {
        return (
            DiagnosisKind::Healthy,
            format!("ok on every route ({routes})"),
        );
    }
    if all(Class::Auth) {
        let sentence = format!("auth on every route ({routes}); the key or account is refused");
        return (DiagnosisKind::CredentialProblem, sentence);
    }
    if all(Class::ServerError) {
        let sentence = format!("server_error on every route ({routes}); the provider is failing");
        return (DiagnosisKind::ProviderProblem, sentence);
    }
    if ok.is_empty() {
        return (
            DiagnosisKind::AllDown,
            format!("no route is ok: {}", group_by_class(row)),
        );
    }
    if failing.iter().all(|cell| cell.class == Class::GeoBlock) {
        let sentence = format!(
            "geo_block on {}; ok on {}",
            with_countries(&failing, countries),
            with_countries(&ok, countries)
        );
        return (DiagnosisKind::GeoPartial, sentence);
    }
    if failing.iter().all(|cell| fails_every_monitor(cell, cells)) {
        let sentence = format!(
            "{} for every monitor on the route; ok on {}",
            group_by_class(&failing),
            join_names(ok.iter().map(|cell| cell.route.clone()).collect())
        );
        return (DiagnosisKind::RouteProblem, sentence);
    }
    (DiagnosisKind::Mixed, group_by_class(row))
}

/// True when every monitor with a verdict on `cell`'s route got `cell`'s class there.
fn fails_every_monitor(cell: &Cell, cells: &[Cell]) -> bool {
    cells
        .iter()
        .filter(|other| other.route == cell.route)
        .all(|other| other.class == cell.class)
}

/// Writes `class on a and b; class on c`, classes in [`Class::ALL`] order.
fn group_by_class(cells: &[&Cell]) -> String {
    Class::ALL
        .iter()
        .filter_map(|class| {
            let routes: Vec<String> = cells
                .iter()
                .filter(|cell| cell.class == *class)
                .map(|cell| cell.route.clone())
                .collect();
            (!routes.is_empty()).then(|| format!("{class} on {}", join_names(routes)))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writes route names with their egress country where known: `a (egress HK) and b`.
fn with_countries(cells: &[&Cell], countries: &BTreeMap<String, String>) -> String {
    let names = cells
        .iter()
        .map(|cell| match countries.get(&cell.route) {
            Some(country) => format!("{} (egress {country})", cell.route),
            None => cell.route.clone(),
        })
        .collect();
    join_names(names)
}

/// Joins names as `a`, `a and b` or `a, b and c`.
fn join_names(mut names: Vec<String>) -> String {
    let Some(last) = names.pop() else {
        return String::new();
    };
    if names.is_empty() {
        return last;
    }
    format!("{} and {last}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(rows: &[(&str, &str, Class)]) -> Vec<Cell> {
        rows.iter()
            .map(|(monitor, route, class)| Cell {
                monitor: (*monitor).to_owned(),
                route: (*route).to_owned(),
                class: *class,
            })
            .collect()
    }

    fn countries(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(route, country)| ((*route).to_owned(), (*country).to_owned()))
            .collect()
    }

    fn only(cells: &[Cell], countries: &BTreeMap<String, String>) -> (DiagnosisKind, String) {
        let diagnoses = diagnose(cells, countries);
        assert_eq!(diagnoses.len(), 1, "{diagnoses:?}");
        (diagnoses[0].kind, diagnoses[0].sentence.clone())
    }

    #[test]
    fn diagnose_all_ok_is_healthy() {
        let matrix = cells(&[("api", "direct", Class::Ok), ("api", "hk", Class::Ok)]);
        assert_eq!(
            only(&matrix, &BTreeMap::new()),
            (
                DiagnosisKind::Healthy,
                "ok on every route (direct and hk)".to_owned()
            )
        );
    }

    #[test]
    fn diagnose_auth_everywhere_is_credential_problem() {
        let matrix = cells(&[("api", "direct", Class::Auth), ("api", "hk", Class::Auth)]);
        assert_eq!(
            only(&matrix, &BTreeMap::new()),
            (
                DiagnosisKind::CredentialProblem,
                "auth on every route (direct and hk); the key or account is refused".to_owned()
            )
        );
    }

    #[test]
    fn diagnose_server_error_everywhere_is_provider_problem() {
        let matrix = cells(&[("api", "direct", Class::ServerError)]);
        assert_eq!(
            only(&matrix, &BTreeMap::new()),
            (
                DiagnosisKind::ProviderProblem,
                "server_error on every route (direct); the provider is failing".to_owned()
            )
        );
    }

    #[test]
    fn diagnose_geo_on_some_routes_is_geo_partial() {
        let matrix = cells(&[
            ("api", "direct", Class::Ok),
            ("api", "via-http", Class::GeoBlock),
            ("api", "via-socks", Class::GeoBlock),
        ]);
        let known = countries(&[("direct", "US"), ("via-http", "HK")]);
        assert_eq!(
            only(&matrix, &known),
            (
                DiagnosisKind::GeoPartial,
                "geo_block on via-http (egress HK) and via-socks; ok on direct (egress US)"
                    .to_owned()
            )
        );
    }

    #[test]
    fn diagnose_route_failing_every_monitor_is_route_problem() {
        let matrix = cells(&[
            ("a", "direct", Class::Ok),
            ("a", "dead", Class::Proxy),
            ("b", "direct", Class::Ok),
            ("b", "dead", Class::Proxy),
        ]);
        let diagnoses = diagnose(&matrix, &BTreeMap::new());
        assert_eq!(diagnoses.len(), 2);
        for diagnosis in &diagnoses {
            assert_eq!(diagnosis.kind, DiagnosisKind::RouteProblem);
            assert_eq!(
                diagnosis.sentence,
                "proxy on dead for every monitor on the route; ok on direct"
            );
        }
        assert_eq!(diagnoses[0].monitor, "a");
        assert_eq!(diagnoses[1].monitor, "b");
    }

    #[test]
    fn diagnose_route_ok_for_another_monitor_is_mixed() {
        let matrix = cells(&[
            ("a", "direct", Class::Ok),
            ("a", "hk", Class::WafHtml),
            ("b", "direct", Class::Ok),
            ("b", "hk", Class::Ok),
        ]);
        let diagnoses = diagnose(&matrix, &BTreeMap::new());
        assert_eq!(diagnoses[0].kind, DiagnosisKind::Mixed);
        assert_eq!(diagnoses[0].sentence, "ok on direct; waf_html on hk");
        assert_eq!(diagnoses[1].kind, DiagnosisKind::Healthy);
    }

    #[test]
    fn diagnose_nothing_ok_is_all_down() {
        let matrix = cells(&[
            ("api", "direct", Class::Timeout),
            ("api", "hk", Class::Proxy),
            ("api", "sg", Class::Timeout),
        ]);
        assert_eq!(
            only(&matrix, &BTreeMap::new()),
            (
                DiagnosisKind::AllDown,
                "no route is ok: timeout on direct and sg; proxy on hk".to_owned()
            )
        );
    }

    #[test]
    fn diagnose_geo_everywhere_is_all_down() {
        let matrix = cells(&[("api", "hk", Class::GeoBlock)]);
        assert_eq!(only(&matrix, &BTreeMap::new()).0, DiagnosisKind::AllDown);
    }

    #[test]
    fn diagnose_empty_matrix_has_no_diagnoses() {
        assert_eq!(diagnose(&[], &BTreeMap::new()), Vec::new());
    }

    #[test]
    fn join_names_uses_commas_and_and() {
        let names = |list: &[&str]| list.iter().map(|name| (*name).to_owned()).collect();
        assert_eq!(join_names(names(&[])), "");
        assert_eq!(join_names(names(&["a"])), "a");
        assert_eq!(join_names(names(&["a", "b"])), "a and b");
        assert_eq!(join_names(names(&["a", "b", "c"])), "a, b and c");
    }
}
