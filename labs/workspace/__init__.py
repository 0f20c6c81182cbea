"""The learner's own copy of the course: student notebooks made from the instructor sources the
way nbgrader releases an assignment, kept up to date without overwriting a learner's edits, a
course home, and a record of which solutions the learner revealed."""
