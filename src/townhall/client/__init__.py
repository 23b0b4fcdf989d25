"""Client-side pieces shared by townhall's own listeners (CLI, load tool, tests)."""
