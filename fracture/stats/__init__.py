"""Pure statistics: metrics, the patient-cluster bootstrap, operating points."""
