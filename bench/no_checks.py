"""Measurement only: takes the gRPC listener's auth and limit checks out of
the working tree (metadata size, API key, credential stripping, content
type), for `bench/instructions.sh` to compare a build without them; run the
router with `limits.max_in_flight = 0` as well to skip the call limit.
docs/BENCHMARKS.md ("The checks alone") shows the use. Undo with
`git checkout src/services/listener.rs` (in a tree with no other change
to that file); never commit the result.
"""

import pathlib
import sys

PATH = pathlib.Path(__file__).resolve().parent.parent / "src/services/listener.rs"

CUTS = [
    (
        """        if let Err(message) = super::overload::check_metadata(request.headers(), self.max_metadata)
        {""",
        """        if false {
            let message = String::new();""",
    ),
    (
        """            if let Err(denied) = self.keys.check(request.headers(), Role::Client) {
                return Box::pin(std::future::ready(Ok(refused(denied))));
            }
            if let Some(refused) = InferenceService::refuse_unless_grpc(request.headers()) {
                return Box::pin(std::future::ready(Ok(refused.map(Either::Left))));
            }
            // The router's credentials stay here.
            self.keys.strip(request.headers_mut());""",
        """            let _ = &mut request;""",
    ),
]

source = PATH.read_text()
for old, new in CUTS:
    if old not in source:
        sys.exit(f"{PATH} has changed since this patch was written: update bench/no_checks.py")
    source = source.replace(old, new)
PATH.write_text(source)
print(f"checks taken out of {PATH}")
