"""Service: the loop `metascope run` drives (loop), one frame's work (pipeline), the loop's policies, its
run statistics and the state-directory lock."""
