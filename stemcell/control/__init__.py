"""Control plane glue, pure: what crosses actor calls and the StateStore, and how it is planned.

`contracts` holds the frozen shapes (AppRun, CameraSpec, stats and reports, routes, share
decisions) and `errors` the exceptions that cross actors; `roles` names roles and actors;
`camera_plans` turns an admin's request into runs, `camera_changes` diffs a round's schedules
against what runs, `reallocation` orders make-before-break steps, `planning` holds the Planner's
pure parts. Policies stay in `stemcell.scheduling`, which imports nothing from here.
"""
