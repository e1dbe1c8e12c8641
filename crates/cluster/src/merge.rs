//! Merging the shards' answers: top k by score, pages by id.

use latentdb_server::pb;

/// The best `k` hits of the shards' lists (each best first), best first: larger scores first
/// (every metric's score is "larger is closer"), ties broken by id so that the merge is
/// deterministic. Each shard's exact top k holds every hit of the global exact top k that
/// lives on it, so the merged list equals a single node's.
pub fn top_k(lists: Vec<Vec<pb::SearchHit>>, k: usize) -> Vec<pb::SearchHit> {
    let mut all: Vec<pb::SearchHit> = lists.into_iter().flatten().collect();
    all.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    all.truncate(k);
    all
}

/// One page of `limit` records merged from the shards' pages (each in id order, each the
/// shard's next `limit` records after the same cursor), and the cursor of the next page.
pub fn scroll(pages: Vec<pb::ScrollResponse>, limit: usize) -> (Vec<pb::Record>, Option<String>) {
    let more_on_a_shard = pages.iter().any(|p| p.next_cursor.is_some());
    let mut all: Vec<pb::Record> = pages.into_iter().flat_map(|p| p.records).collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let cut = all.len() > limit;
    all.truncate(limit);
    let next = if cut || more_on_a_shard {
        all.last().map(|r| r.id.clone())
    } else {
        None
    };
    (all, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f32) -> pb::SearchHit {
        pb::SearchHit {
            id: id.into(),
            score,
            ..Default::default()
        }
    }

    #[test]
    fn merges_by_score_then_id() {
        let merged = top_k(
            vec![
                vec![hit("a", 0.9), hit("b", 0.5)],
                vec![hit("c", 0.7), hit("d", 0.5)],
                vec![],
            ],
            3,
        );
        let ids: Vec<&str> = merged.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
        // Negated L2 distances merge the same way.
        let merged = top_k(vec![vec![hit("x", -2.0)], vec![hit("y", -0.5)]], 10);
        assert_eq!(merged[0].id, "y");
    }

    fn rec(id: &str) -> pb::Record {
        pb::Record {
            id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn pages_merge_by_id() {
        let (page, next) = scroll(
            vec![
                pb::ScrollResponse {
                    records: vec![rec("a"), rec("d")],
                    next_cursor: Some("d".into()),
                },
                pb::ScrollResponse {
                    records: vec![rec("b"), rec("c")],
                    next_cursor: None,
                },
            ],
            2,
        );
        let ids: Vec<&str> = page.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(next.as_deref(), Some("b"));
        let (page, next) = scroll(
            vec![pb::ScrollResponse {
                records: vec![rec("z")],
                next_cursor: None,
            }],
            5,
        );
        assert_eq!(page.len(), 1);
        assert_eq!(next, None);
    }
}
