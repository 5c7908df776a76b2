"""The split step: patient-grouped, label-stratified splits and their cohort tables."""
