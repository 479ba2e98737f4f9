"""Campaign uplift: read randomised campaign results, fit uplift meta-learners, evaluate them by
Qini and uplift at a budget, export the winner as an ``uplift`` bundle, and plan campaigns."""
