import cython

cdef class Limits:
    cdef public Py_ssize_t line
    cdef public Py_ssize_t headers
    cdef public object body

cdef class Request:
    cdef public str method, target, query, args, version
    cdef public dict headers
    cdef public bint keep_alive, expect_continue, chunked
    cdef public object content_length

@cython.locals(crlf=Py_ssize_t, lf=Py_ssize_t)
cpdef Py_ssize_t find_head_end(bytes buf, Py_ssize_t start=*)

@cython.locals(line_limit=Py_ssize_t, obs_text=bint, long_lines=bint, text=str, lines=list, request_line=str,
               parts=list, method=str, target=str, version=str, headers=dict, known=dict, line=str, name=str,
               colon=str, value=str, lname=str, path=str, request=Request)
cpdef Request parse_head(bytes head, Limits limits)
