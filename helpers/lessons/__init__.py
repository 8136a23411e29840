"""Lesson code generated from the notebooks: see helpers.workbook.lesson_code."""
