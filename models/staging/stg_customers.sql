{{ config(materialized='table', tags=['staging', 'customers']) }}

-- One row per raw customer row, typed and cleaned. Rows are kept as they are (no dedup) so the
-- unique test on customer_id catches duplicated ids in the source instead of hiding them.
with source as (
    select * from {{ ref('customers') }}
),

cleaned as (
    select
        trim(customer_id) as customer_id,
        -- Title-case word by word: DuckDB has no initcap, and "SAN  francisco" must become
        -- "San Francisco".
        nullif(array_to_string(list_transform(
            string_split(lower(regexp_replace(trim(first_name), '\s+', ' ', 'g')), ' '),
            lambda w: upper(left(w, 1)) || substr(w, 2)
        ), ' '), '') as first_name,
        nullif(lower(trim(email)), '') as email,
        nullif(array_to_string(list_transform(
            string_split(lower(regexp_replace(trim(city), '\s+', ' ', 'g')), ' '),
            lambda w: upper(left(w, 1)) || substr(w, 2)
        ), ' '), '') as city,
        try_cast(trim(age) as integer) as raw_age,
        nullif(lower(trim(tier)), '') as tier,
        try_cast(trim(signup_date) as date) as signup_date,
        try_cast(trim(purchase_frequency) as double) as purchase_frequency,
        try_cast(trim(avg_order_value) as double) as avg_order_value,
        try_cast(trim(days_since_last_purchase) as integer) as days_since_last_purchase,
        try_cast(trim(days_since_last_engagement) as integer) as days_since_last_engagement,
        try_cast(trim(historical_open_rate) as double) as open_rate,
        try_cast(trim(historical_click_rate) as double) as click_rate
    from source
)

select
    customer_id,
    first_name,
    email,
    {{ regex_match("coalesce(email, '')", '[^@\s]+@[^@\s]+\.[^@\s]+') }} as email_is_valid,
    city,
    -- Ages outside 13-110 are data-entry errors ("0", "999", "-4"), not customers.
    case when raw_age between 13 and 110 then raw_age end as age,
    tier,
    signup_date,
    greatest(purchase_frequency, 0) as purchase_frequency,
    greatest(avg_order_value, 0) as avg_order_value,
    greatest(days_since_last_purchase, 0) as days_since_last_purchase,
    greatest(days_since_last_engagement, 0) as days_since_last_engagement,
    greatest(least(open_rate, 1.0), 0.0) as open_rate,
    greatest(least(click_rate, 1.0), 0.0) as click_rate
from cleaned
