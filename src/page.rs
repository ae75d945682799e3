//! Page-numbered listing shared by topics, subscriptions and dead letters: defaults, bounds,
//! and the next/previous/total arithmetic of the original's list responses.

/// Default page size when a request says 0.
pub const DEFAULT_PAGE_SIZE: i64 = 100;
/// Largest page size served.
pub const MAX_PAGE_SIZE: i64 = 1000;

/// A requested page, already defaulted and bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// 1-based page number.
    pub page: i64,
    /// Items per page, 1..=MAX_PAGE_SIZE.
    pub size: i64,
}

impl PageRequest {
    /// From the wire: 0 (or less) page means 1, 0 size means the default, sizes are capped.
    pub fn new(page: i32, size: i32) -> Self {
        let page = i64::from(page.max(1));
        let size = if size <= 0 {
            DEFAULT_PAGE_SIZE
        } else {
            i64::from(size).min(MAX_PAGE_SIZE)
        };
        PageRequest { page, size }
    }

    /// SQL OFFSET of this page.
    pub fn offset(&self) -> i64 {
        (self.page - 1).saturating_mul(self.size)
    }
}

/// One page of results with the numbers list responses carry.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Items in all.
    pub total_count: i64,
    /// Next page, 0 when none.
    pub next_page: i64,
    /// Previous page, 0 when none.
    pub previous_page: i64,
    /// Pages in all.
    pub total_pages: i64,
}

impl<T> Page<T> {
    /// Assembles a page from its items and the total count.
    pub fn new(req: PageRequest, items: Vec<T>, total_count: i64) -> Self {
        let total_pages = (total_count + req.size - 1) / req.size;
        Page {
            items,
            total_count,
            next_page: if req.page < total_pages {
                req.page + 1
            } else {
                0
            },
            previous_page: if req.page > 1 { req.page - 1 } else { 0 },
            total_pages,
        }
    }

    /// The same page with each item turned into another.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            total_count: self.total_count,
            next_page: self.next_page,
            previous_page: self.previous_page,
            total_pages: self.total_pages,
        }
    }
}

/// Clamps a count to the i32 of the wire format.
pub fn wire(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(PageRequest::new(0, 0), PageRequest { page: 1, size: 100 });
        assert_eq!(PageRequest::new(-3, 5000).size, 1000);
        assert_eq!(PageRequest::new(3, 10).offset(), 20);
    }

    #[test]
    fn page_numbers() {
        let p = Page::new(PageRequest::new(1, 10), vec![(); 10], 25);
        assert_eq!((p.next_page, p.previous_page, p.total_pages), (2, 0, 3));
        let p = Page::new(PageRequest::new(3, 10), vec![(); 5], 25);
        assert_eq!((p.next_page, p.previous_page, p.total_pages), (0, 2, 3));
        let p: Page<()> = Page::new(PageRequest::new(1, 10), vec![], 0);
        assert_eq!((p.next_page, p.previous_page, p.total_pages), (0, 0, 0));
    }
}
