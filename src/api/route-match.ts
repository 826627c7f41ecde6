// Does a request path match any registered route (of any method)? Used to answer unknown paths
// with 404 M_UNRECOGNIZED and known paths with the wrong method with 405 M_UNRECOGNIZED, and to
// keep auth middleware from answering 401 for paths that do not exist.

interface RouteLike {
  method: string;
  path: string;
}

export function routeMatcher(routes: () => RouteLike[], prefix = ""): (path: string) => boolean {
  let patterns: RegExp[] | undefined;
  return (path) => {
    patterns ??= routes()
      .filter((r) => r.method !== "ALL" && !r.path.includes("*"))
      .map((r) => new RegExp(`^${prefix}${r.path.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\/:[^/]+/g, "/[^/]+")}$`));
    return patterns.some((re) => re.test(path));
  };
}
