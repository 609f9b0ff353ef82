"""The application: the demo's measurements (:mod:`.evaluation`), reports and plots (:mod:`.report`),
run folders (:mod:`.runs`), the main job (:mod:`.demo`) and the `pcdiff` command line (:mod:`.cli`)."""
