"""Cluster layer: reaching Ray, handed down to the layers below by the command line.

    connection.py   the Ray connection: an embedded local cluster or an existing one, token auth;
                    RayConnection, the sweep driver's way to Ray
    local.py        `sweeper cluster start/stop`: a loopback cluster of this machine
    ray_tasks.py    Ray tasks as the executor of dataset chunks (`sweeper data make --address`)
    jobs.py         `sweeper submit`: the sweep driver as a Ray Job
    ship_filter.py  what `sweeper submit` ships: no symlink out of the checkout, no secrets
    job_address.py  the Jobs API address the token goes to: the user's, never job.json's
    ray_env_scrub.py  Tune kept from copying AWS_* credentials into trials' runtime_envs
"""
