"""Pure predicates on absolute path names, by name only (no filesystem access): the one `is_under`."""


def is_under(path: str, root: str) -> bool:
    """`path` is `root` or below it, by name ("/a/bc" is not under "/a/b"; everything is under "/")."""
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root == "/" else root + "/")
