"""Control plane glue, pure: what crosses actor calls and the StateStore, and how it is planned.

`contracts` holds the frozen shapes (AppRun, CameraSpec, stats and reports, routes, share
decisions); `camera_plans` turns an admin's request into runs, `camera_changes` diffs a round's
schedules against what runs, `plan_state` names the saved plan's sections, `reallocation` orders
make-before-break steps. Policies stay in `stemcell.scheduling`, which imports nothing from here.
"""
