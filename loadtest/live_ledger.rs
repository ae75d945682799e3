//! The exactly-once, in-order accounting of `er-live-bench --storm`: one ledger per client of
//! the durable offsets it was pushed, from the offset it first joined after to the topic's
//! last offset at the end.
//!
//! A push of an offset already pushed is a duplicate; one of an offset below the highest so
//! far that had not been pushed yet came out of order; an offset never pushed by the end is
//! missing. The ledger keeps one bit per offset of its range, so it tells these apart exactly
//! (a thousand clients times a few thousand events is a few hundred kilobytes).

/// One client's durable deliveries.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// The offset the client first joined after: it expects every offset above it.
    start: i64,
    /// Highest offset pushed so far (`start` before any).
    last: i64,
    /// One bit per offset above `start`: pushed at least once.
    seen: Vec<u64>,
    distinct: u64,
    duplicates: u64,
    out_of_order: u64,
    /// Pushes of offsets at or below `start` (never asked for).
    unasked: u64,
}

/// What a ledger found once the topic's last offset is known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Offsets expected: everything after the client's first join up to the topic's end.
    pub expected: u64,
    /// Distinct offsets pushed.
    pub delivered: u64,
    /// Offsets pushed more than once, or at or below the first join's `after_offset`.
    pub duplicates: u64,
    /// Pushes that came after a higher offset.
    pub out_of_order: u64,
    /// Expected offsets never pushed.
    pub missing: u64,
}

impl Tally {
    /// Every expected event exactly once and in order.
    pub fn exact(&self) -> bool {
        self.duplicates == 0 && self.out_of_order == 0 && self.missing == 0
    }

    /// Adds another client's tally.
    pub fn add(&mut self, o: Tally) {
        self.expected += o.expected;
        self.delivered += o.delivered;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.missing += o.missing;
    }
}

impl Ledger {
    /// A client that joins after `start`.
    pub fn new(start: i64) -> Ledger {
        Ledger {
            start,
            last: start,
            seen: Vec::new(),
            distinct: 0,
            duplicates: 0,
            out_of_order: 0,
            unasked: 0,
        }
    }

    /// The offset to resume after: the highest pushed so far.
    pub fn last(&self) -> i64 {
        self.last
    }

    /// Records a push of durable offset `offset`.
    pub fn see(&mut self, offset: i64) {
        if offset <= self.start {
            self.unasked += 1;
            return;
        }
        let i = (offset - self.start - 1) as usize;
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        self.distinct += 1;
        if offset < self.last {
            self.out_of_order += 1;
        } else {
            self.last = offset;
        }
    }

    /// The tally once the topic ends at `head`. Offsets above `head` that were pushed anyway
    /// cannot happen (nothing was published there) and would count as delivered.
    pub fn tally(&self, head: i64) -> Tally {
        let expected = (head - self.start).max(0) as u64;
        let within = self.seen_up_to(head);
        Tally {
            expected,
            delivered: self.distinct,
            duplicates: self.duplicates + self.unasked,
            out_of_order: self.out_of_order,
            missing: expected - within,
        }
    }

    /// Distinct offsets pushed in `start+1..=head`.
    fn seen_up_to(&self, head: i64) -> u64 {
        let n = (head - self.start).max(0) as usize;
        let (full, rest) = (n / 64, n % 64);
        let mut count: u64 = self
            .seen
            .iter()
            .take(full)
            .map(|w| u64::from(w.count_ones()))
            .sum();
        if rest > 0
            && let Some(w) = self.seen.get(full)
        {
            count += u64::from((w & ((1u64 << rest) - 1)).count_ones());
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offset_once_and_in_order_is_exact() {
        let mut l = Ledger::new(100);
        for o in 101..=300 {
            l.see(o);
        }
        assert_eq!(l.last(), 300);
        let t = l.tally(300);
        assert!(t.exact(), "{t:?}");
        assert_eq!((t.expected, t.delivered), (200, 200));
    }

    #[test]
    fn duplicates_gaps_disorder_and_a_short_tail_are_told_apart() {
        let mut l = Ledger::new(10);
        for o in [11, 12, 12, 14, 13, 15, 9, 10, 15] {
            l.see(o);
        }
        assert_eq!(l.last(), 15);
        // 12 and 15 twice, 9 and 10 never asked for; 13 after 14; 16..=20 never came.
        assert_eq!(
            l.tally(20),
            Tally {
                expected: 10,
                delivered: 5,
                duplicates: 4,
                out_of_order: 1,
                missing: 5,
            }
        );
        // A gap that is never filled is missing, whatever came after it.
        let mut g = Ledger::new(0);
        for o in (1..=130).filter(|o| *o != 64 && *o != 65) {
            g.see(o);
        }
        let t = g.tally(130);
        assert_eq!((t.missing, t.out_of_order, t.duplicates), (2, 0, 0));
        assert!(!t.exact());
    }

    #[test]
    fn nothing_expected_and_nothing_pushed_is_exact() {
        let t = Ledger::new(5).tally(5);
        assert!(t.exact());
        assert_eq!(t.expected, 0);
        let mut sum = Tally::default();
        sum.add(Ledger::new(0).tally(3));
        sum.add(t);
        assert_eq!((sum.expected, sum.missing), (3, 3));
    }
}
