"""Tasks as data (prompt, target, parser), where their rows come from (hub, local files, the
ListOps generator), tokenization with answer-only labels, and length-grouped batching."""
