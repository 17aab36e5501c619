{{ config(materialized='table', tags=['staging', 'customers']) }}
{%- set src = sources.customers %}
{%- macro title_case(column) -%}
    {#- DuckDB has no initcap: "SAN  francisco" must become "San Francisco". -#}
    nullif(array_to_string(list_transform(
        string_split(lower(regexp_replace(trim(cast({{ column }} as varchar)), '\s+', ' ', 'g')), ' '),
        lambda w: upper(left(w, 1)) || substr(w, 2)
    ), ' '), '')
{%- endmacro %}

-- One row per row of the customers file (sources.customers in cpo.yml), with each mapped role
-- typed and cleaned and the listed attributes carried through unchanged. Roles that are not
-- mapped are simply absent: downstream models compute what the mapped roles allow. Rows are
-- kept as they are (no dedup) so the unique test on customer_id reports duplicated ids.
-- Values are not clamped: customer_values_are_plausible reports out-of-range and non-finite
-- numbers instead of hiding them.
with source as (
    select
    {%- for role in src.roles %}
        {{ src.expression(role) }} as "__role_{{ role }}",
    {%- endfor %}
    {%- for attribute in src.attributes %}
        "{{ attribute }}",
    {%- endfor %}
    from {{ src.relation }}
)

select
    nullif(trim(cast("__role_customer_id" as varchar)), '') as customer_id,
{%- if src.has('first_name') %}
    {{ title_case('"__role_first_name"') }} as first_name,
{%- endif %}
{%- if src.has('email') %}
    nullif(lower(trim(cast("__role_email" as varchar))), '') as email,
    {{ regex_match("coalesce(lower(trim(cast(\"__role_email\" as varchar))), '')",
        '[^@\\s]+@[^@\\s]+\\.[^@\\s]+') }} as email_is_valid,
{%- endif %}
{%- if src.has('city') %}
    {{ title_case('"__role_city"') }} as city,
{%- endif %}
{%- if src.has('age') %}
    -- Ages outside 13-110 are data-entry errors ("0", "999", "-4"), not customers.
    case when try_cast("__role_age" as integer) between 13 and 110
        then try_cast("__role_age" as integer) end as age,
{%- endif %}
{%- if src.has('tier') %}
    nullif(lower(trim(cast("__role_tier" as varchar))), '') as tier,
{%- endif %}
{%- if src.has('signup_date') %}
    try_cast("__role_signup_date" as date) as signup_date,
{%- endif %}
{%- for role, type in customer_role_types.items() if type == 'double' and src.has(role) %}
    try_cast("__role_{{ role }}" as double) as {{ role }},
{%- endfor %}
{%- for attribute in src.attributes %}
    "{{ attribute }}",
{%- endfor %}
from source
