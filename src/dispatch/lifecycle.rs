//! One dispatch pass over problems and groups: what each alert and each timer changes, and
//! which notifications come of it. Pure: the state comes in, the decisions go out, and the
//! store commits both in one transaction (so the same pass is the same commit, whatever
//! crashes around it).
//!
//! # Semantics (spec "Alert lifecycle")
//!
//! - A **problem** is one `dedup_key`. Its first alert makes it *pending*: it waits for its
//!   group's next notification. Once notified, its repeats are *folded* (counted, not sent)
//!   until `repeat_interval` after that notification; then the next notification carries a
//!   reminder ("failed 37 more times since 03:00"). A timer makes that reminder even when no
//!   repeat comes after the interval, so a problem that keeps failing is reminded of at most
//!   once per `repeat_interval`, and one that stopped is reminded of once.
//! - A **group** is a rule and the values of its `group_by`. A group that has not notified
//!   (new, or all of its problems closed) notifies `group_wait` after its first pending
//!   problem (at once by default); one that has notifies its pending problems no sooner than
//!   `group_interval` after its last notification. One pending problem goes as its own alert,
//!   several as one digest.
//! - A **recovery** (`failed = false`, or a rule's `resolve = true`) of an open problem closes
//!   it. If the problem was notified, its sinks hear of it (those that want recoveries; a sink
//!   that keeps incidents per group only when the group's last open problem recovers); a
//!   problem that never notified closes silently. A recovery of no open problem is an ordinary
//!   alert.
//! - A problem with no alert for `resolve_after` closes quietly; a group without problems ends.
//! - A silenced alert changes no state: it is counted against its silences and never sent,
//!   not even when the silence ends.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Local, SecondsFormat};
use herald_bridges::text::one_line;
use herald_bridges::{Alert, Kind, Member, Repeats, Severity};
use tracing::warn;

use super::policy::{Policies, Policy};
use super::Fanout;
use crate::route::{SUMMARY_MAX_CHARS, TITLE_MAX_CHARS};
use crate::store::{Decisions, Fate, Group, Notification, Payload, Problem, Routed, State};

/// The id of the group with `key` under `rule`: the two cannot collide, since a rule's name
/// has no control characters.
pub(super) fn group_id(rule: Option<&str>, key: &str) -> String {
    format!("{}\u{1f}{key}", rule.unwrap_or(""))
}

/// The rule part of a group id.
fn group_rule(id: &str) -> Option<&str> {
    id.split_once('\u{1f}')
        .map(|(rule, _)| rule)
        .filter(|r| !r.is_empty())
}

fn ms(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A time for JSON: RFC 3339, in UTC.
fn rfc3339(at: i64) -> String {
    DateTime::from_timestamp_millis(at)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A time for a person: the daemon's local time, with the date when it is not `now`'s day.
fn clock(at: i64, now: i64) -> String {
    let local = |t: i64| DateTime::from_timestamp_millis(t).map(|t| t.with_timezone(&Local));
    match (local(at), local(now)) {
        (Some(at), Some(now)) if at.date_naive() == now.date_naive() => {
            at.format("%H:%M").to_string()
        }
        (Some(at), _) => at.format("%b %d %H:%M").to_string(),
        (None, _) => "?".into(),
    }
}

/// One pass: the state it read, and what it has decided so far.
pub(super) struct Pass<'a> {
    policies: &'a Policies,
    fanout: &'a Fanout,
    now: i64,
    problems: HashMap<String, Problem>,
    groups: HashMap<String, Group>,
    /// The alerts a notification may show: this pass's, and the stored ones of pending and
    /// folded problems.
    alerts: HashMap<i64, Alert>,
    changed: BTreeSet<String>,
    closed: BTreeSet<String>,
    regrouped: BTreeSet<String>,
    ended: BTreeSet<String>,
    decided: Vec<(i64, Fate)>,
    /// Decided alerts that joined a group, by their index in `decided`: their fate is known
    /// once the pass knows whether the group notified.
    joined: Vec<(usize, String)>,
    notifications: Vec<Notification>,
    suppressed: BTreeMap<i64, u64>,
    /// Groups that notified in this pass, and whether with a digest.
    flushed: HashMap<String, bool>,
}

impl<'a> Pass<'a> {
    /// A pass at `now` (ms) over `state`, able to show `alerts`.
    pub(super) fn new(
        policies: &'a Policies,
        fanout: &'a Fanout,
        state: State,
        alerts: HashMap<i64, Alert>,
        now: i64,
    ) -> Pass<'a> {
        Pass {
            policies,
            fanout,
            now,
            problems: state
                .problems
                .into_iter()
                .map(|p| (p.dedup_key.clone(), p))
                .collect(),
            groups: state
                .groups
                .into_iter()
                .map(|g| (g.id.clone(), g))
                .collect(),
            alerts,
            changed: BTreeSet::new(),
            closed: BTreeSet::new(),
            regrouped: BTreeSet::new(),
            ended: BTreeSet::new(),
            decided: Vec::new(),
            joined: Vec::new(),
            notifications: Vec::new(),
            suppressed: BTreeMap::new(),
            flushed: HashMap::new(),
        }
    }

    fn policy_of_group(&self, group_id: &str) -> &'a Policy {
        self.policies.of(group_rule(group_id))
    }

    /// Decides one routed alert; `silences` are those that match it.
    pub(super) fn alert(&mut self, id: i64, routed: Routed, silences: Vec<i64>) {
        if !silences.is_empty() {
            for s in &silences {
                *self.suppressed.entry(*s).or_default() += 1;
            }
            self.decided.push((id, Fate::Silenced { silences }));
            return;
        }
        let Routed { alert, sinks } = routed;
        let now = self.now;
        let key = alert.dedup_key.clone();
        let recovery = alert.resolve || alert.failed == Some(false);
        if recovery && self.problems.get(&key).is_some_and(|p| p.open) {
            self.resolve(id, alert);
            return;
        }
        let opening =
            !recovery && (alert.failed == Some(true) || alert.severity >= Severity::Warning);
        let policy = self.policies.of(alert.rule.as_deref());
        if policy.repeat_interval.is_zero() {
            // Folding is off for this rule: every alert goes at once, on its own, as it came.
            let severity = alert.severity;
            self.notify(Payload::Stored { id, rewrite: None }, severity, &sinks);
            let group = alert.dedup_key;
            self.decided.push((
                id,
                Fate::Notified {
                    group,
                    digest: false,
                },
            ));
            return;
        }
        let group_key = policy.group_key(&alert);
        let group = group_id(alert.rule.as_deref(), &group_key);
        self.alerts.insert(id, alert);
        let Some(problem) = self.problems.get_mut(&key) else {
            self.problems.insert(
                key.clone(),
                Problem {
                    dedup_key: key.clone(),
                    group_id: group.clone(),
                    open: opening,
                    first_at: now,
                    last_at: now,
                    notified_at: None,
                    folded: 0,
                    folded_since: None,
                    remind_at: None,
                    expire_at: now.saturating_add(ms(policy.resolve_after)),
                    pending: true,
                    alert_id: id,
                    sinks,
                },
            );
            self.changed.insert(key);
            self.join(id, &group, &group_key);
            return;
        };
        // A problem keeps the group it opened in, even if a changed rule would group it
        // elsewhere now: its group's timers and digests stay whole.
        let policy = self.policies.of(group_rule(&problem.group_id));
        problem.last_at = now;
        // A problem not yet notified keeps its first alert: that one's notification shows
        // the repeats; once notified, a reminder shows the latest.
        if problem.notified_at.is_some() {
            problem.alert_id = id;
        }
        problem.expire_at = now.saturating_add(ms(policy.resolve_after));
        problem.open |= opening;
        for sink in sinks {
            if !problem.sinks.contains(&sink) {
                problem.sinks.push(sink);
            }
        }
        let group = problem.group_id.clone();
        self.changed.insert(key.clone());
        problem.folded += 1;
        problem.folded_since.get_or_insert(now);
        // A repeat is counted into the problem's next notification: its first, while that
        // is pending; a reminder once repeat_interval has passed since the last one.
        let pending = problem.pending;
        let remind = problem.notified_at.is_some_and(|notified| {
            pending || now >= notified.saturating_add(ms(policy.repeat_interval))
        });
        if !remind {
            let count = problem.folded;
            self.decided.push((
                id,
                Fate::Folded {
                    problem: key,
                    count,
                },
            ));
            return;
        }
        problem.pending = true;
        let group_key = self
            .groups
            .get(&group)
            .map_or_else(|| group_key.clone(), |g| g.key.clone());
        self.join(id, &group, &group_key);
    }

    /// Records that alert `id` has a pending problem in `group`, and schedules the group.
    fn join(&mut self, id: i64, group: &str, key: &str) {
        self.joined.push((self.decided.len(), group.to_owned()));
        self.decided.push((
            id,
            Fate::Grouped {
                group: key.to_owned(),
                due_at: 0,
            },
        ));
        self.schedule(group, key);
    }

    /// Gives `group` a notification time if it has none.
    fn schedule(&mut self, group: &str, key: &str) {
        let policy = self.policy_of_group(group);
        let now = self.now;
        let g = self
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Group {
                id: group.to_owned(),
                key: key.to_owned(),
                notified_at: None,
                flush_at: None,
            });
        if g.flush_at.is_none() {
            g.flush_at = Some(match g.notified_at {
                None => now.saturating_add(ms(policy.group_wait)),
                Some(t) => now.max(t.saturating_add(ms(policy.group_interval))),
            });
        }
        self.ended.remove(group);
        self.regrouped.insert(group.to_owned());
    }

    /// A recovery of the open problem `alert.dedup_key`.
    fn resolve(&mut self, id: i64, mut alert: Alert) {
        let key = alert.dedup_key.clone();
        // A failure whose notification is due now (no group_wait) goes before its recovery,
        // even when both came in one pass: only a wait the user asked for hides a problem
        // that recovered.
        let due_now = self
            .problems
            .get(&key)
            .filter(|p| p.pending)
            .and_then(|p| self.groups.get(&p.group_id))
            .filter(|g| g.flush_at.is_some_and(|t| t <= self.now))
            .map(|g| g.id.clone());
        if let Some(group) = due_now {
            self.flush(&group);
        }
        let group_key = self
            .problems
            .get(&key)
            .and_then(|p| self.groups.get(&p.group_id))
            .map(|g| g.key.clone());
        let Some(problem) = self.close(&key) else {
            return;
        };
        let notified = problem.notified_at.is_some();
        if notified {
            let others_open = self
                .problems
                .values()
                .any(|p| p.group_id == problem.group_id && p.open);
            alert.resolve = true;
            alert.group_key = group_key.filter(|k| *k != key);
            let sinks: Vec<String> = problem
                .sinks
                .iter()
                .filter(|s| self.fanout.wants_recovery(s, others_open))
                .cloned()
                .collect();
            self.notify(
                Payload::Stored {
                    id,
                    rewrite: Some(alert.clone()),
                },
                alert.severity,
                &sinks,
            );
        }
        self.decided.push((
            id,
            Fate::Resolved {
                problem: key,
                notified,
            },
        ));
    }

    /// Closes a problem; its group ends if it was the last one.
    fn close(&mut self, key: &str) -> Option<Problem> {
        let problem = self.problems.remove(key)?;
        self.changed.remove(key);
        self.closed.insert(key.to_owned());
        if !self
            .problems
            .values()
            .any(|p| p.group_id == problem.group_id)
        {
            self.groups.remove(&problem.group_id);
            self.regrouped.remove(&problem.group_id);
            self.ended.insert(problem.group_id.clone());
        }
        Some(problem)
    }

    /// The timers that have come: quiet problems close, folded repeats become reminders.
    /// (Groups due to notify are notified by [`Pass::finish`].)
    pub(super) fn timers(&mut self) {
        let now = self.now;
        let mut expired = Vec::new();
        let mut reminded = Vec::new();
        for p in self.problems.values().filter(|p| !p.pending) {
            if p.expire_at <= now {
                expired.push(p.dedup_key.clone());
            } else if p.folded > 0 && p.remind_at.is_some_and(|r| r <= now) {
                reminded.push((p.dedup_key.clone(), p.group_id.clone()));
            }
        }
        for key in expired {
            self.close(&key);
        }
        for (key, group) in reminded {
            if let Some(p) = self.problems.get_mut(&key) {
                p.pending = true;
                self.changed.insert(key);
            }
            let group_key = self.groups.get(&group).map(|g| g.key.clone());
            let group_key = group_key.unwrap_or_else(|| group.clone());
            self.schedule(&group, &group_key);
        }
    }

    /// Notifies every group that is due, and returns all the pass decided.
    pub(super) fn finish(mut self) -> Decisions {
        let now = self.now;
        let mut due: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.flush_at.is_some_and(|t| t <= now))
            .map(|g| g.id.clone())
            .collect();
        due.sort();
        for group in due {
            self.flush(&group);
        }
        for (index, group) in std::mem::take(&mut self.joined) {
            let key = self.groups.get(&group).map(|g| g.key.clone());
            let fate = match (self.flushed.get(&group), self.groups.get(&group)) {
                (Some(digest), _) => Fate::Notified {
                    group: key.unwrap_or_default(),
                    digest: *digest,
                },
                (None, Some(g)) => Fate::Grouped {
                    group: g.key.clone(),
                    due_at: g.flush_at.unwrap_or(now),
                },
                // Its problem closed later in the same pass.
                (None, None) => Fate::Notified {
                    group: String::new(),
                    digest: false,
                },
            };
            if let Some(decided) = self.decided.get_mut(index) {
                decided.1 = fate;
            }
        }
        Decisions {
            decided: self.decided,
            notifications: self.notifications,
            problems: self
                .changed
                .iter()
                .filter_map(|k| self.problems.get(k).cloned())
                .collect(),
            closed: self.closed.into_iter().collect(),
            groups: self
                .regrouped
                .iter()
                .filter_map(|g| self.groups.get(g).cloned())
                .collect(),
            ended: self.ended.into_iter().collect(),
            suppressed: self.suppressed.into_iter().collect(),
        }
    }

    /// Notifies `group`'s pending problems: one alone, several in a digest.
    fn flush(&mut self, group: &str) {
        let now = self.now;
        let policy = self.policy_of_group(group);
        let mut members: Vec<&Problem> = self
            .problems
            .values()
            .filter(|p| p.group_id == group && p.pending)
            .collect();
        members.sort_by(|a, b| (a.first_at, &a.dedup_key).cmp(&(b.first_at, &b.dedup_key)));
        let Some(g) = self.groups.get(group) else {
            return;
        };
        let key = g.key.clone();
        let mut sinks: Vec<String> = Vec::new();
        for sink in members.iter().flat_map(|m| &m.sinks) {
            if !sinks.contains(sink) {
                sinks.push(sink.clone());
            }
        }
        let notice: Option<(Payload, Severity)> = match members.as_slice() {
            [] => None,
            [one] => self.alerts.get(&one.alert_id).map(|alert| {
                let mut alert = alert.clone();
                alert.group_key = (key != alert.dedup_key).then(|| key.clone());
                let severity = alert.severity;
                let id = one.alert_id;
                if one.notified_at.is_some() {
                    remind(&mut alert, one, now);
                    (Payload::New(alert), severity)
                } else if one.folded > 0 {
                    // A first alert with repeats before it went out: it says how many.
                    remind(&mut alert, one, now);
                    (
                        Payload::Stored {
                            id,
                            rewrite: Some(alert),
                        },
                        severity,
                    )
                } else {
                    // A first alert goes as it was stored; only a group key is added.
                    let rewrite = alert.group_key.is_some().then_some(alert);
                    (Payload::Stored { id, rewrite }, severity)
                }
            }),
            several => {
                let digest = digest(&key, group_rule(group), several, &self.alerts);
                let severity = digest.severity;
                Some((Payload::New(digest), severity))
            }
        };
        let keys: Vec<String> = members.iter().map(|m| m.dedup_key.clone()).collect();
        let digest = keys.len() > 1;
        for k in &keys {
            if let Some(p) = self.problems.get_mut(k) {
                p.pending = false;
                p.notified_at = Some(now);
                p.folded = 0;
                p.folded_since = None;
                p.remind_at = (!policy.repeat_interval.is_zero())
                    .then(|| now.saturating_add(ms(policy.repeat_interval)));
                self.changed.insert(k.clone());
            }
        }
        if let Some(g) = self.groups.get_mut(group) {
            if !keys.is_empty() {
                g.notified_at = Some(now);
            }
            g.flush_at = None;
        }
        self.regrouped.insert(group.to_owned());
        if let Some((payload, severity)) = notice {
            self.notify(payload, severity, &sinks);
            self.flushed.insert(group.to_owned(), digest);
        } else if !keys.is_empty() {
            warn!(group = %key, "The alert of a pending problem is gone from the state; its notification is skipped.");
        }
    }

    fn notify(&mut self, payload: Payload, severity: Severity, sinks: &[String]) {
        let (destinations, missing) = self.fanout.destinations(sinks);
        if !missing.is_empty() {
            warn!(sinks = %missing.join(","), "Alert routed to sinks that are no longer configured; not delivered there.");
        }
        self.notifications.push(Notification {
            payload,
            severity,
            destinations,
        });
    }
}

/// When the repeats a notification of `problem` covers began: its first alert if it was
/// never notified, else the first repeat folded since.
fn covered_since(problem: &Problem) -> i64 {
    match problem.notified_at {
        None => problem.first_at,
        Some(_) => problem.folded_since.unwrap_or(problem.first_at),
    }
}

/// Makes `alert` (the problem's latest) a reminder of the problem's folded repeats.
fn remind(alert: &mut Alert, problem: &Problem, now: i64) {
    let since = covered_since(problem);
    let verb = if alert.failed == Some(true) {
        "failed"
    } else {
        "repeated"
    };
    let times = if problem.folded == 1 { "time" } else { "times" };
    alert.summary = one_line(
        &format!(
            "{verb} {} more {times} since {}: {}",
            problem.folded,
            clock(since, now),
            alert.summary
        ),
        SUMMARY_MAX_CHARS,
    );
    alert.repeats = Some(Repeats {
        count: problem.folded,
        since: rfc3339(since),
        last: rfc3339(problem.last_at),
    });
    alert.message_id = None;
}

/// The value all `values` share, if they share one.
fn common<T: PartialEq + Clone>(mut values: impl Iterator<Item = T>) -> Option<T> {
    let first = values.next()?;
    values.all(|v| v == first).then_some(first)
}

/// One alert listing `members` (two or more) of the group `key`.
fn digest(
    key: &str,
    rule: Option<&str>,
    members: &[&Problem],
    alerts: &HashMap<i64, Alert>,
) -> Alert {
    let shown: Vec<(&Problem, Option<&Alert>)> = members
        .iter()
        .map(|p| (*p, alerts.get(&p.alert_id)))
        .collect();
    let known = || shown.iter().filter_map(|(_, a)| *a);
    let severity = known()
        .map(|a| a.severity)
        .max()
        .unwrap_or(Severity::Warning);
    let kind = common(known().map(|a| a.kind)).unwrap_or(Kind::Other);
    let host = common(known().map(|a| a.host.clone())).flatten();
    let user = common(known().map(|a| a.user.clone())).flatten();
    let command = common(known().map(|a| a.command.clone())).flatten();
    let failed = known().any(|a| a.failed == Some(true)).then_some(true);
    let n = members.len();
    let what: Vec<&str> = key
        .split(':')
        .filter(|v| !v.is_empty() && *v != "-")
        .collect();
    let title = one_line(
        &format!("{n} problems: {}", what.join(" ")),
        TITLE_MAX_CHARS,
    );
    // The short form, for SMS and any sink that shows only the summary: the first few
    // hosts (or problems, when they share a host) and how many there are.
    let mut names: Vec<String> = Vec::new();
    for (p, a) in &shown {
        let name = match a.and_then(|a| a.host.clone()).filter(|_| host.is_none()) {
            Some(host) => host,
            None => a.map_or_else(|| p.dedup_key.clone(), |a| a.title.clone()),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    const SHORT: usize = 5;
    let noun = if host.is_none() { "hosts" } else { "problems" };
    let mut summary = names
        .iter()
        .take(SHORT)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHORT {
        summary.push_str(", …");
    }
    summary.push_str(&format!(" ({} {noun})", names.len()));
    let listed: Vec<Member> = shown
        .iter()
        .take(Alert::DIGEST_MAX_MEMBERS)
        .map(|(p, a)| {
            let count = if p.notified_at.is_none() {
                p.folded + 1
            } else {
                p.folded
            };
            Member {
                kind: a.map_or(Kind::Other, |a| a.kind),
                host: a.and_then(|a| a.host.clone()),
                user: a.and_then(|a| a.user.clone()),
                command: a.and_then(|a| a.command.clone()),
                failed: a.and_then(|a| a.failed),
                severity: a.map_or(severity, |a| a.severity),
                title: a.map_or_else(|| p.dedup_key.clone(), |a| a.title.clone()),
                summary: a.map(|a| a.summary.clone()).unwrap_or_default(),
                dedup_key: p.dedup_key.clone(),
                count,
                first: rfc3339(covered_since(p)),
                last: rfc3339(p.last_at),
                reminder: p.notified_at.is_some(),
            }
        })
        .collect();
    let more = (n - listed.len()) as u64;
    Alert {
        message_id: None,
        kind,
        host,
        user,
        command,
        failed,
        exit_status: None,
        severity,
        rule: rule.map(str::to_owned),
        title: title.clone(),
        summary: one_line(&summary, SUMMARY_MAX_CHARS),
        dedup_key: key.to_owned(),
        facts: BTreeMap::new(),
        subject: title,
        from: None,
        date: None,
        body: String::new(),
        truncated: false,
        account: None,
        mailbox: None,
        trusted: None,
        resolve: false,
        group_key: Some(key.to_owned()),
        repeats: None,
        digest: listed,
        digest_more: more,
    }
}
