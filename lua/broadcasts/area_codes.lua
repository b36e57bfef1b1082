return { ["212"] = "America/New_York", ["213"] = "America/Los_Angeles", ["808"] = "Pacific/Honolulu" }
