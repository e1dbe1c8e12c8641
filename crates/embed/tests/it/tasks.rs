//! Built-in task instructions.

use crate::common::fixture;
use latentdb_embed::Instruction;
use latentdb_embed::tasks::{query_prefix, task, tasks};

#[test]
fn shipped_instructions_match_the_fixture() {
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture("nvembed-v2-config/instructions.json")).expect("fixture"),
    )
    .expect("json");
    let all = tasks();
    assert_eq!(all.len(), expected.as_object().expect("object").len());
    for t in &all {
        let f = &expected[&t.name];
        let q = f
            .get("query")
            .or_else(|| f.get("text"))
            .and_then(|v| v.as_str());
        assert_eq!(Some(t.query.as_str()), q, "{}", t.name);
    }
}

#[test]
fn tasks_are_found_by_name() {
    let nq = task("NQ").expect("NQ");
    assert_eq!(
        nq.query,
        "Given a question, retrieve passages that answer the question"
    );
    assert_eq!(
        nq.query_prefix(),
        "Instruct: Given a question, retrieve passages that answer the question\nQuery: "
    );
    assert!(task("MSMARCO").is_ok());
    assert_eq!(task("msmarco").expect("case-insensitive").name, "MSMARCO");
    let err = task("NoSuchTask").expect_err("unknown");
    assert!(err.to_string().contains("NQ"));
    assert_eq!(query_prefix(""), "");
    assert_eq!(Instruction::parse("NQ"), Instruction::Task("NQ".into()));
    assert_eq!(
        Instruction::parse("Instruct: x\nQuery: "),
        Instruction::Raw("Instruct: x\nQuery: ".into())
    );
    assert_eq!(
        Instruction::parse("find it").prefix().expect("prefix"),
        "Instruct: find it\nQuery: "
    );
}
